-- 002: stock generations (issue 9, contract v2).
--
-- Every POST /init starts a new generation of a product's stock, and every
-- message carries the generation it belongs to; an order also carries the
-- stock its generation was set to.  The worker accounts each order against
-- its own generation only, so the messages of a batch commute: no arrival
-- order (several nginx processes, several producers) turns an order the
-- gate accepted into a rejected row, and a replayed stock_set changes
-- nothing.  This replaces the Kafka-offset guard of 001 (stock_set_*),
-- which a recreated topic or added partitions broke.
--
-- Products recorded before this migration keep their stock with
-- generation 0 until their first v2 message; old orders keep a NULL
-- generation.

-- One row per (product, generation), made by whichever message of that
-- generation arrives first: a stock_set (stock, set_at) or an order
-- (stock = its generationStock; set_at stays NULL until the stock_set
-- comes).  Only new order rows add to sold, and the check makes selling
-- more than the generation's stock impossible even for a hand-written
-- UPDATE.
create table stock_generations (
    product_id  text,
    generation  bigint,
    stock       integer not null check (stock >= 0),
    sold        integer not null default 0,
    set_at      timestamptz,
    primary key (product_id, generation),
    check (sold >= 0 and sold <= stock)
);

comment on table stock_generations is
    'stock per product and generation (one per POST /init): set, sold';

-- the generation the order was reserved in (NULL: recorded before 002)
alter table orders add column generation bigint;

-- products is now derived: stock - sold of the product's highest
-- generation, recomputed by the worker after each batch
alter table products add column generation bigint not null default 0;

alter table products
    drop column stock_set_at,
    drop column stock_set_topic,
    drop column stock_set_partition,
    drop column stock_set_offset;

comment on table products is
    'stock left per product: stock - sold of its highest generation';
