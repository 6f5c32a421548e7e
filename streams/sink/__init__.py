"""CRM delivery: decisions from leads.assignments to a CRM or webhook, once per decision_id, in order per lead."""
