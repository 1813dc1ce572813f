"""Where this project copies or patches Django, Channels, asgiref or redis-py internals."""
