"""Background threads of a process: a periodic loop and a server of batched requests."""
