"""dwp_lib: the deep weight prior (Atanov et al., ICLR 2019), hands-on.
One module per concept, in the book's order; a module imports only those above or beside it
(``tests/test_layout.py``); ``ARCHITECTURE.md`` maps them."""

__version__ = "0.1.0"
