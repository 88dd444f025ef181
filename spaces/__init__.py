"""Built-in space plugins of spacegraph (installed as ``spacegraph_spaces``)."""
