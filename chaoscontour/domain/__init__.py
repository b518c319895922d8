"""Pure domain logic: no I/O, no clients, unit-tested without mocks."""
