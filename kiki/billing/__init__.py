"""Usage-based billing: catalogue, metering, pricing, proration, invoices and revenue analytics."""
