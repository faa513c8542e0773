"""taskapp: users and their tasks, over HTTP."""
