"""The local sandbox and the binary builder. The chaos activities never import this subpackage."""
