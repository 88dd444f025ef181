"""Built-in bridge methods of spacegraph (installed as ``spacegraph_bridges``)."""
