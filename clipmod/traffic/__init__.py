"""The traffic store: every stored embedding of one model revision as contiguous, memory-mapped
arrays (`segments`), kept in step with SQL by a sync over the traffic log (`sync`), and the
semantic search that reads it (`search`)."""
