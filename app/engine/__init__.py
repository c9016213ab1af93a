"""The engine thread: EngineHost on the GUI side, EngineWorker (model, chat session) in
its QThread."""
