"""CRM sync: contacts and orders from HubSpot, Salesforce, Shopify or a PostgreSQL table,
pulled incrementally into SyncEngage's customers and SyncValue's transactions."""
