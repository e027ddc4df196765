"""Transfer strategies as freeze policies: ``base`` (what every policy does), ``policies`` (the built-in
five), ``bitfit`` (the worked example of adding one) and ``registry`` (``strategy=NAME`` → a policy)."""
