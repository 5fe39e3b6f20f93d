"""The runs table and the page ledger: what a run fetched, wrote and concluded."""
