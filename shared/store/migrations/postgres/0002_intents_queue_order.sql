-- Listing intents in queue order without a status filter (the API's default page).
CREATE INDEX intents_order_idx ON intents (priority, created_at, id);
