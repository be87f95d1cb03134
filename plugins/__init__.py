"""Built-in pipeline plugins; each module defines ``Plugin(context)`` with its hook implementations."""
