"""The pure decision core: no Faust, Kafka or Prometheus imports; time and state come in as arguments."""
