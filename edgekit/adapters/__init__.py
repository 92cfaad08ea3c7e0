"""Model adapters: other libraries' models wrapped so they answer in an edgekit task's layout."""
