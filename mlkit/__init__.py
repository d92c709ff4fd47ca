"""mlkit: the deterministic soft-float DNN runtime (C) and its Python model tools."""
