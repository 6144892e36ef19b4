"""Triton kernels, each beside the readable torch reference that specifies it."""
