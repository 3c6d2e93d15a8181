"""One-time routing: the profiler, the learned router (embeddings + MLP) and its offline evaluation."""
