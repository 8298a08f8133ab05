"""The upstream HTTP/1.1 client: keep-alive pools (`transport`), the sans-IO exchange state
(`h1_protocol`) and its socket half (`_h1`), and the circuit breaker. It never imports the serving side.
"""
