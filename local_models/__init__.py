"""Model code, weights and engines: the catalog, the llama.cpp engine, the native engines."""
