"""What the functions tell operators: EMF metrics and structured logs."""
