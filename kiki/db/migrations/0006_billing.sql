-- Billing: each tenant bills its own customers by plan and usage; amounts are integers in the
-- currency's minor unit (cents), computed by kiki.billing (never floats, never in SQL).

CREATE TABLE billing_customers (
    tenant_id           uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The tenant's own id for its customer: usage events name the customer by it.
    customer_id         text        NOT NULL CHECK (customer_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'),
    name                text        NOT NULL DEFAULT '',
    email               text,
    -- Billing periods start at local midnight in this IANA zone (checked by kiki.billing.periods).
    timezone            text        NOT NULL DEFAULT 'UTC',
    tax_percent         numeric(9, 6) NOT NULL DEFAULT 0 CHECK (tax_percent BETWEEN 0 AND 100),
    currency            char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Prepaid credits and credit carried from credit notes: spent on invoices after tax.
    credit_balance_minor bigint     NOT NULL DEFAULT 0 CHECK (credit_balance_minor >= 0),
    stripe_customer_id  text,
    stripe_payment_method_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE billing_metrics (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    code        text        NOT NULL,
    name        text        NOT NULL DEFAULT '',
    -- The validated kiki.billing.catalog.BillableMetric.
    spec        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- Plans are immutable once created: a price change is a new version, so an invoice always
-- names the exact price list it was computed from.
CREATE TABLE billing_plans (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    code        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    -- The validated kiki.billing.catalog.Plan (prices as exact decimal strings).
    spec        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code, version)
);

CREATE TABLE billing_coupons (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    code        text        NOT NULL,
    spec        jsonb       NOT NULL,  -- kiki.billing.catalog.Coupon
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- A coupon applied to a customer; `invoices_discounted` counts the invoices it has been
-- offered to, which decides whether a once / repeating coupon still applies.
CREATE TABLE billing_coupon_redemptions (
    tenant_id           uuid    NOT NULL,
    customer_id         text    NOT NULL,
    coupon_code         text    NOT NULL,
    invoices_discounted integer NOT NULL DEFAULT 0 CHECK (invoices_discounted >= 0),
    redeemed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id, coupon_code),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES billing_customers ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, coupon_code) REFERENCES billing_coupons ON DELETE CASCADE
);

CREATE TABLE billing_subscriptions (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL,
    customer_id     text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'canceled')),
    plan_code       text        NOT NULL,
    plan_version    integer     NOT NULL,
    -- When the current plan started to bill: a mid-period upgrade bills its base fee from here.
    plan_since      timestamptz NOT NULL,
    started_at      timestamptz NOT NULL,
    trial_ends_at   timestamptz,
    -- Periods are counted from the anchor day in `timezone` (the customer's at creation, kept
    -- so that a later change of the customer's zone never shifts an open period).
    anchor          date        NOT NULL,
    timezone        text        NOT NULL,
    period_index    integer     NOT NULL CHECK (period_index >= 0),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL CHECK (period_end > period_start),
    -- A downgrade waits for the period end; close_period applies it.
    pending_plan_code    text,
    pending_plan_version integer,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at     timestamptz,
    ended_at        timestamptz,
    -- When the last invoice of this subscription was computed: events received after it for
    -- an already-invoiced period are late and billed as adjustments on the next invoice.
    last_closed_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES billing_customers ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, plan_code, plan_version) REFERENCES billing_plans,
    FOREIGN KEY (tenant_id, pending_plan_code, pending_plan_version) REFERENCES billing_plans,
    CHECK ((pending_plan_code IS NULL) = (pending_plan_version IS NULL))
);
-- Usage events name a customer, not a subscription: one live subscription per customer keeps
-- every event billed exactly once.
CREATE UNIQUE INDEX billing_subscriptions_one_active ON billing_subscriptions (tenant_id, customer_id)
    WHERE status = 'active';
CREATE INDEX billing_subscriptions_due ON billing_subscriptions (tenant_id, period_end)
    WHERE status = 'active';

-- Which plan a subscription was on when: MRR snapshots at month boundaries read it.
CREATE TABLE billing_subscription_plans (
    subscription_id uuid        NOT NULL REFERENCES billing_subscriptions(id) ON DELETE CASCADE,
    tenant_id       uuid        NOT NULL,
    plan_code       text        NOT NULL,
    plan_version    integer     NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    FOREIGN KEY (tenant_id, plan_code, plan_version) REFERENCES billing_plans,
    PRIMARY KEY (subscription_id, valid_from)
);
CREATE INDEX billing_subscription_plans_tenant ON billing_subscription_plans (tenant_id, valid_from);

-- Lines waiting for the subscription's next invoice: prorations of a plan change, late usage.
CREATE TABLE billing_pending_lines (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    subscription_id uuid        NOT NULL REFERENCES billing_subscriptions(id) ON DELETE CASCADE,
    line            jsonb       NOT NULL,  -- kiki.billing.invoice.InvoiceLine
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_pending_lines_subscription ON billing_pending_lines (subscription_id);

-- Usage. The primary key is the exactly-once guarantee: a retried event (same transaction_id)
-- is never counted twice. No foreign keys: ingestion checks customers and metrics per batch.
CREATE TABLE billing_events (
    tenant_id      uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    transaction_id text        NOT NULL CHECK (length(transaction_id) BETWEEN 1 AND 256),
    customer_id    text        NOT NULL,
    metric_code    text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    properties     jsonb       NOT NULL DEFAULT '{}',
    -- clock_timestamp() under the tenant's ingest lock (see kiki.billing.metering): compared
    -- with a subscription's last_closed_at to find late events.
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, transaction_id)
);
CREATE INDEX billing_events_usage ON billing_events (tenant_id, customer_id, occurred_at);
-- Late-event lookups scan by arrival; BRIN stays tiny on an append-mostly column.
CREATE INDEX billing_events_received ON billing_events USING brin (received_at);

-- Gapless numbering: the counter row is updated in the transaction that finalizes the
-- invoices, so a rolled-back close leaves no hole and two closes never share a number.
CREATE TABLE billing_invoice_counters (
    tenant_id     uuid    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    year          integer NOT NULL CHECK (year BETWEEN 1 AND 9999),
    last_sequence integer NOT NULL CHECK (last_sequence >= 0),
    PRIMARY KEY (tenant_id, year)
);

CREATE TABLE billing_invoices (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid        NOT NULL,
    customer_id           text        NOT NULL,
    subscription_id       uuid        REFERENCES billing_subscriptions(id),
    number                text,  -- set when finalized
    status                text        NOT NULL
                          CHECK (status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')),
    currency              char(3)     NOT NULL,
    plan_code             text,
    plan_version          integer,
    period_start          timestamptz,
    period_end            timestamptz,
    lines                 jsonb       NOT NULL,
    subtotal_minor        bigint      NOT NULL CHECK (subtotal_minor >= 0),
    discount_minor        bigint      NOT NULL CHECK (discount_minor >= 0),
    tax_percent           numeric(9, 6) NOT NULL,
    tax_minor             bigint      NOT NULL CHECK (tax_minor >= 0),
    total_minor           bigint      NOT NULL CHECK (total_minor >= 0),
    credits_applied_minor bigint      NOT NULL CHECK (credits_applied_minor >= 0),
    total_due_minor       bigint      NOT NULL CHECK (total_due_minor >= 0),
    -- Credit beyond the lines (a prorated refund of a prepaid fee), added to the balance.
    credit_carried_minor  bigint      NOT NULL CHECK (credit_carried_minor >= 0),
    refunded_minor        bigint      NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    finalized_at          timestamptz,
    paid_at               timestamptz,
    voided_at             timestamptz,
    FOREIGN KEY (tenant_id, customer_id) REFERENCES billing_customers ON DELETE CASCADE,
    UNIQUE (tenant_id, number),
    -- One invoice per subscription period: closing a period twice cannot bill it twice.
    UNIQUE (subscription_id, period_start),
    CHECK ((status = 'draft') = (number IS NULL))
);
CREATE INDEX billing_invoices_customer ON billing_invoices (tenant_id, customer_id, created_at);

-- One row per invoice: the current PaymentIntent and the dunning state. A retry after a
-- failure creates a new PaymentIntent (a failed one cannot be confirmed again); the row is
-- written before Stripe is called (intent id still null), so two callers never both charge.
CREATE TABLE billing_payments (
    invoice_id        uuid        PRIMARY KEY REFERENCES billing_invoices(id) ON DELETE CASCADE,
    tenant_id         uuid        NOT NULL,
    payment_intent_id text        UNIQUE,
    status            text        NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    amount_minor      bigint      NOT NULL CHECK (amount_minor > 0),
    currency          char(3)     NOT NULL,
    attempts          integer     NOT NULL CHECK (attempts > 0),
    -- When the dunning schedule tries again; null once paid or given up.
    next_retry_at     timestamptz,
    last_error        text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_payments_retry ON billing_payments (next_retry_at) WHERE status = 'failed';

-- Stripe events received, by their id: a replayed event is refused, never applied twice.
-- tenant_id is null for events about no invoice of ours.
CREATE TABLE billing_stripe_events (
    event_id    text        PRIMARY KEY,
    type        text        NOT NULL,
    tenant_id   uuid        REFERENCES tenants(id) ON DELETE CASCADE,
    invoice_id  uuid,
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Tenants' own webhook endpoints; the secret signs every delivery (HMAC-SHA256).
CREATE TABLE billing_webhook_endpoints (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url         text        NOT NULL CHECK (url ~ '^https?://'),
    secret      text        NOT NULL,
    -- Event types to send; null = all.
    events      text[],
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_webhook_endpoints_tenant ON billing_webhook_endpoints (tenant_id);

-- The outbox: written in the transaction that changes the invoice, delivered afterwards with
-- retries and exponential backoff.
CREATE TABLE billing_webhook_deliveries (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES billing_webhook_endpoints(id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX billing_webhook_deliveries_due ON billing_webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
