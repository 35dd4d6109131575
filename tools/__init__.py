"""Developer tools for the relayer repository (not part of the installed package)."""
