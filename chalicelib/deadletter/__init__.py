"""Where records that could not go through are kept, and how they are put back."""
