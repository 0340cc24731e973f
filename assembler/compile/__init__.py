"""Compile and runtime steps in buildah containers; the export agent that reads their files."""
