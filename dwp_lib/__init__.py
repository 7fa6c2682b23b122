"""dwp_lib: the deep weight prior (Atanov et al., ICLR 2019), hands-on.
One module per concept, in the order the book teaches them; data flows downwards (a module
imports only modules above it or beside it, ``tests/test_layout.py``). ``ARCHITECTURE.md``
maps the modules."""

__version__ = "0.1.0"
