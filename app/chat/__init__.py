"""The conversation: chat view, messages, markdown, composer, conversation list, and the
controller between them and the engine."""
