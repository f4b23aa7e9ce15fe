"""The server's side of agents: who they are (the registry) and how an
install's new system finds its way to its agent (enrollment tickets)."""
