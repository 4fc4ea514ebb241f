"""The compression report: terminal table, Markdown and self-contained HTML (``render``), plots (``plots``), and
several runs side by side (``compare``)."""
