"""The user's files: bounded reading, writing that never loses a file, and files of (query, document) pairs."""
