"""What the app keeps: the SQLite chat store and its migrations, and the declared settings."""
