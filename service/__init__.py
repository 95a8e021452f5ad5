"""AgentTasks gRPC server: transport (api/, auth), domain rules (domain/), storage (storage/)."""
