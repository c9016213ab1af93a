"""The Settings tab: sampling, system prompt, memory window."""
