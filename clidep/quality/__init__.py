"""Quality: the perplexity protocol (numpy only) and the eval command over torch models."""
