-- 001: the system of record for the gate.
--
-- Applied by `fluxgate-worker --migrate` inside one transaction and recorded
-- in schema_migrations (created by the worker itself), so this file holds
-- plain DDL without BEGIN/COMMIT.

-- Stock of each product.  The worker applies `stock_set` events here and
-- takes each new order's quantity off with the safety net
-- `stock = stock - q WHERE stock >= q`; the check makes overselling
-- impossible even for a hand-written UPDATE.
create table products (
    id                  text primary key
                        check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    stock               integer not null check (stock >= 0),
    updated_at          timestamptz not null default now(),
    -- the Kafka position of the stock_set event that set `stock`: a
    -- redelivered (older or same) event must not reset the stock that the
    -- orders after it already took from
    stock_set_at        timestamptz,
    stock_set_topic     text,
    stock_set_partition integer,
    stock_set_offset    bigint
);

comment on table products is
    'stock per product; set by stock_set events, decremented by new orders';

-- Every order the gate accepted, exactly once (keyed by the orderId the
-- nginx module made).  An order the database could not cover is kept with
-- status ''rejected'' and the reason, for follow-up.
create table orders (
    id              uuid primary key,
    product_id      text not null,
    user_id         text not null,
    quantity        integer not null check (quantity > 0),
    idempotency_key text not null,
    status          text not null default 'accepted'
                    check (status in ('accepted', 'rejected')),
    reason          text,
    accepted_at     timestamptz not null,
    created_at      timestamptz not null default now(),
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    check ((status = 'rejected') = (reason is not null))
);

create index orders_product_id_idx on orders (product_id);
create index orders_rejected_idx on orders (created_at)
    where status = 'rejected';

comment on table orders is
    'accepted orders, one row per orderId; status rejected = DB could not cover it';

-- Messages the worker could not use, with their exact bytes and position,
-- so nothing is lost and the partition moves on.
create table dead_letters (
    id          bigserial primary key,
    topic       text not null,
    "partition" integer not null,
    "offset"    bigint not null,
    key         bytea,
    payload     bytea,
    reason      text not null,
    created_at  timestamptz not null default now(),
    unique (topic, "partition", "offset")
);

comment on table dead_letters is
    'unparseable Kafka messages: position, raw bytes and why';
