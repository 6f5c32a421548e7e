"""HTTP ingress: signed POSTs of leads and deals, validated by the contracts, acknowledged by Kafka."""
