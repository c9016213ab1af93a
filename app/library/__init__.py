"""Model -> Get models...: the catalog with fit verdicts, and downloads off the GUI thread."""
