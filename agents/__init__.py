"""The model seam (``agents.llm``) and the workflows built on it, one folder each."""
