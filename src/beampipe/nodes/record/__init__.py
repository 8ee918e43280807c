"""beampipe's own recordings: ``recorder`` writes them, ``replay`` plays them back."""
