-- PayPal as a second payment gateway. Each billing customer pays through the gateway it chose
-- (Stripe unless it chose PayPal); a PayPal customer pays with a vaulted payment token, or
-- without one by approving each invoice's order at PayPal (the approval link).
ALTER TABLE billing_customers
    ADD COLUMN payment_gateway text NOT NULL DEFAULT 'stripe'
        CHECK (payment_gateway IN ('stripe', 'paypal')),
    -- PayPal's vault customer and payment token (Payment Method Tokens API v3).
    ADD COLUMN paypal_customer_id text,
    ADD COLUMN paypal_payment_token_id text;

-- The gateway that took the payment (refunds go back through it, whatever the customer
-- chooses later), and, for a PayPal order waiting for the payer, the link they approve it at.
-- payment_intent_id holds a PayPal order id while it waits and its capture id once paid.
ALTER TABLE billing_payments
    ADD COLUMN gateway text NOT NULL DEFAULT 'stripe' CHECK (gateway IN ('stripe', 'paypal')),
    ADD COLUMN approval_url text;

-- Gateway events received: Stripe's and PayPal's ids are deduplicated per gateway, so a
-- replayed event is refused and never applied twice.
ALTER TABLE billing_stripe_events
    ADD COLUMN gateway text NOT NULL DEFAULT 'stripe' CHECK (gateway IN ('stripe', 'paypal'));
ALTER TABLE billing_stripe_events DROP CONSTRAINT billing_stripe_events_pkey;
ALTER TABLE billing_stripe_events ADD PRIMARY KEY (gateway, event_id);
