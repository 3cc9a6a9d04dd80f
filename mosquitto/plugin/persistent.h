/*
 * Persistent sessions, for the services that cap them per user (issue 14, finding 9).
 *
 * Mosquitto 2.0's plugin API cannot end an offline session, and the plugin keeps no record of
 * one (its table holds live connections only). So the plugin only tells: each accepted user
 * CONNECT that does not start clean (a session that outlives the connection) is published on
 * PN_PERSISTENT_TOPIC, QoS 1, not retained, as {"userId","clientId","at"} (unix ms). The API
 * records them in PostgreSQL and, past the cap, ends the oldest offline ones by taking their
 * client id over with a clean start (api/session_cap.py). Service connections are not told.
 */
#ifndef PLANTNOTIFY_PERSISTENT_H
#define PLANTNOTIFY_PERSISTENT_H

/* Must match plantnotify/contracts/topics.py (tests check both agree). */
#define PN_PERSISTENT_TOPIC "plantnotify/broker/persistent-sessions"

/* The notice as JSON into buf: its length, or -1 if it does not fit. user and client_id are
 * validated ids (no characters that need escaping in JSON). */
int pn_persistent_notice(char *buf, unsigned long size, const char *user, const char *client_id,
		long long at_ms);

/* Publishes the notice (logs a failure; a lost notice leaves one session uncapped until it
 * reconnects or persistent_client_expiration ends it). */
void pn_persistent_opened(const char *user, const char *client_id);

#endif
