/* Live-connection bookkeeping (see sessions.h). */
#include "sessions.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct pn_user {
	char name[PN_USER_ID_MAX + 1];
	int live;            /* records in `conns` */
	int service_seen;    /* authenticated with role service since start */
	int dirty;           /* live client ids changed since the last snapshot */
	pn_conn *conns;      /* doubly linked via user_next/user_prev */
	struct pn_user *bucket_next;
	struct pn_user *dirty_next;
} pn_user;

struct pn_sessions {
	pn_conn **conn_buckets;
	size_t conn_nbuckets, conn_count;
	pn_user **user_buckets;
	size_t user_nbuckets, user_count;
	pn_user *dirty;
	pn_conn *departed;  /* linked via user_next */
	size_t departed_count;
};

#define INITIAL_BUCKETS 256

static size_t hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x;
}

static size_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	while(*s){
		h ^= (unsigned char)*s++;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

pn_sessions *pn_sessions_new(void)
{
	pn_sessions *s = calloc(1, sizeof(*s));
	if(!s) return NULL;
	s->conn_nbuckets = s->user_nbuckets = INITIAL_BUCKETS;
	s->conn_buckets = calloc(s->conn_nbuckets, sizeof(*s->conn_buckets));
	s->user_buckets = calloc(s->user_nbuckets, sizeof(*s->user_buckets));
	if(!s->conn_buckets || !s->user_buckets){
		pn_sessions_free(s);
		return NULL;
	}
	return s;
}

void pn_sessions_free(pn_sessions *s)
{
	size_t i;
	if(!s) return;
	for(i = 0; s->conn_buckets && i < s->conn_nbuckets; i++){
		pn_conn *c = s->conn_buckets[i];
		while(c){
			pn_conn *next = c->bucket_next;
			free(c->client_id);
			free(c);
			c = next;
		}
	}
	for(i = 0; s->user_buckets && i < s->user_nbuckets; i++){
		pn_user *u = s->user_buckets[i];
		while(u){
			pn_user *next = u->bucket_next;
			free(u);
			u = next;
		}
	}
	free(s->conn_buckets);
	free(s->user_buckets);
	free(s);
}

/* ------------------------------------------------------------------ users */

static pn_user *user_find(const pn_sessions *s, const char *name)
{
	pn_user *u = s->user_buckets[hash_str(name) & (s->user_nbuckets - 1)];
	while(u && strcmp(u->name, name) != 0) u = u->bucket_next;
	return u;
}

static void user_rehash(pn_sessions *s)
{
	size_t n = s->user_nbuckets * 2, i;
	pn_user **nb = calloc(n, sizeof(*nb));
	if(!nb) return; /* keep the old table; only slower */
	for(i = 0; i < s->user_nbuckets; i++){
		pn_user *u = s->user_buckets[i];
		while(u){
			pn_user *next = u->bucket_next;
			size_t b = hash_str(u->name) & (n - 1);
			u->bucket_next = nb[b];
			nb[b] = u;
			u = next;
		}
	}
	free(s->user_buckets);
	s->user_buckets = nb;
	s->user_nbuckets = n;
}

static pn_user *user_get(pn_sessions *s, const char *name)
{
	pn_user *u = user_find(s, name);
	size_t b;
	if(u) return u;
	u = calloc(1, sizeof(*u));
	if(!u) return NULL;
	strncpy(u->name, name, PN_USER_ID_MAX);
	if(s->user_count >= s->user_nbuckets) user_rehash(s);
	b = hash_str(name) & (s->user_nbuckets - 1);
	u->bucket_next = s->user_buckets[b];
	s->user_buckets[b] = u;
	s->user_count++;
	return u;
}

static void user_forget(pn_sessions *s, pn_user *u)
{
	size_t b = hash_str(u->name) & (s->user_nbuckets - 1);
	pn_user **pp = &s->user_buckets[b];
	while(*pp && *pp != u) pp = &(*pp)->bucket_next;
	if(*pp){
		*pp = u->bucket_next;
		s->user_count--;
		free(u);
	}
}

static void mark_dirty(pn_sessions *s, pn_user *u)
{
	if(u->dirty) return;
	u->dirty = 1;
	u->dirty_next = s->dirty;
	s->dirty = u;
}

int pn_sessions_is_service_user(const pn_sessions *s, const char *user)
{
	const pn_user *u = user ? user_find(s, user) : NULL;
	return u && u->service_seen;
}

/* ------------------------------------------------------------------ connections */

pn_conn *pn_sessions_find(const pn_sessions *s, const void *client)
{
	pn_conn *c = s->conn_buckets[hash_ptr(client) & (s->conn_nbuckets - 1)];
	while(c && c->client != client) c = c->bucket_next;
	return c;
}

size_t pn_sessions_size(const pn_sessions *s)
{
	return s->conn_count - s->departed_count;
}

static void conn_rehash(pn_sessions *s)
{
	size_t n = s->conn_nbuckets * 2, i;
	pn_conn **nb = calloc(n, sizeof(*nb));
	if(!nb) return;
	for(i = 0; i < s->conn_nbuckets; i++){
		pn_conn *c = s->conn_buckets[i];
		while(c){
			pn_conn *next = c->bucket_next;
			size_t b = hash_ptr(c->client) & (n - 1);
			c->bucket_next = nb[b];
			nb[b] = c;
			c = next;
		}
	}
	free(s->conn_buckets);
	s->conn_buckets = nb;
	s->conn_nbuckets = n;
}

int pn_sessions_count_other(const pn_sessions *s, const char *user, const char *client_id)
{
	const pn_user *u = user_find(s, user);
	const pn_conn *c;
	int n = 0;
	if(!u) return 0;
	for(c = u->conns; c; c = c->user_next){
		if(!client_id || strcmp(c->client_id, client_id) != 0) n++;
	}
	return n;
}

static int user_has_client_id(const pn_sessions *s, const char *user, const char *client_id)
{
	const pn_user *u = user_find(s, user);
	const pn_conn *c;
	if(!u) return 0;
	for(c = u->conns; c; c = c->user_next){
		if(!strcmp(c->client_id, client_id)) return 1;
	}
	return 0;
}

int pn_sessions_client_id_owned_by_other(const pn_sessions *s, const char *user, const char *client_id)
{
	char candidate[PN_USER_ID_MAX + 1];
	size_t i;

	/*
	 * A client id C belongs to user V when C == V or C == V + "-" + suffix, so the only other
	 * possible owners are C itself and every prefix of C that ends before a '-'.
	 */
	if(strcmp(client_id, user) != 0 && user_has_client_id(s, client_id, client_id)) return 1;
	for(i = 1; client_id[i] && i <= PN_USER_ID_MAX; i++){
		if(client_id[i] != '-') continue;
		memcpy(candidate, client_id, i);
		candidate[i] = '\0';
		if(strcmp(candidate, user) != 0 && user_has_client_id(s, candidate, client_id)) return 1;
	}
	return 0;
}

/* Takes a live record out of its user's list and accounting. */
static void unlink_from_user(pn_sessions *s, pn_conn *c)
{
	pn_user *u = c->owner;
	if(c->user_prev) c->user_prev->user_next = c->user_next;
	else u->conns = c->user_next;
	if(c->user_next) c->user_next->user_prev = c->user_prev;
	c->user_next = c->user_prev = NULL;
	u->live--;
	if(!c->is_service) mark_dirty(s, u);
	else if(u->live == 0 && !u->dirty && !u->service_seen) user_forget(s, u);
}

/* Takes a record out of the pointer table (live or departed) and frees it. */
static void drop(pn_sessions *s, pn_conn *c)
{
	size_t b = hash_ptr(c->client) & (s->conn_nbuckets - 1);
	pn_conn **pp = &s->conn_buckets[b];
	while(*pp && *pp != c) pp = &(*pp)->bucket_next;
	if(*pp) *pp = c->bucket_next;
	s->conn_count--;
	if(c->departed){
		pn_conn **dp = &s->departed;
		while(*dp && *dp != c) dp = &(*dp)->user_next;
		if(*dp) *dp = c->user_next;
		s->departed_count--;
	}else{
		unlink_from_user(s, c);
	}
	free(c->client_id);
	free(c);
}

int pn_sessions_remove(pn_sessions *s, const void *client)
{
	pn_conn *c = pn_sessions_find(s, client);
	if(!c) return 0;
	drop(s, c);
	return 1;
}

int pn_sessions_depart(pn_sessions *s, const void *client)
{
	pn_conn *c = pn_sessions_find(s, client);
	if(!c || c->departed) return 0;
	unlink_from_user(s, c);
	c->departed = 1;
	c->owner = NULL;
	c->user_next = s->departed;
	s->departed = c;
	s->departed_count++;
	return 1;
}

void pn_sessions_reap(pn_sessions *s)
{
	while(s->departed) drop(s, s->departed);
}

int pn_sessions_add(pn_sessions *s, const void *client, const char *user, const char *client_id,
		long long exp, int is_service)
{
	pn_conn *c;
	pn_user *u;
	size_t b;

	/* A pointer is reused only after its DISCONNECT, but never trust that blindly. */
	pn_sessions_remove(s, client);

	u = user_get(s, user);
	if(!u) return -1;
	c = calloc(1, sizeof(*c));
	if(!c || !(c->client_id = strdup(client_id))){
		free(c);
		if(u->live == 0 && !u->dirty && !u->service_seen) user_forget(s, u);
		return -1;
	}
	c->client = client;
	strncpy(c->user, user, PN_USER_ID_MAX);
	c->exp = exp;
	c->is_service = is_service;
	c->owner = u;

	if(s->conn_count >= s->conn_nbuckets) conn_rehash(s);
	b = hash_ptr(client) & (s->conn_nbuckets - 1);
	c->bucket_next = s->conn_buckets[b];
	s->conn_buckets[b] = c;
	s->conn_count++;

	c->user_next = u->conns;
	if(u->conns) u->conns->user_prev = c;
	u->conns = c;
	u->live++;
	if(is_service) u->service_seen = 1;
	else mark_dirty(s, u);
	return 0;
}

size_t pn_sessions_expired(const pn_sessions *s, long long now, long leeway, pn_conn **out, size_t max)
{
	size_t i, n = 0;
	for(i = 0; i < s->conn_nbuckets && n < max; i++){
		pn_conn *c;
		for(c = s->conn_buckets[i]; c && n < max; c = c->bucket_next){
			if(!c->departed && now - leeway >= c->exp) out[n++] = c;
		}
	}
	return n;
}

/* ------------------------------------------------------------------ snapshots */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *pn_sessions_snapshot(const pn_sessions *s, const char *user, const char *boot_id,
		unsigned long long seq, long long now)
{
	const pn_user *u = user_find(s, user);
	const pn_conn *c;
	const char **ids = NULL;
	size_t n = 0, i, distinct = 0;
	json_t *arr, *doc;
	char *out;

	if(u && u->live > 0){
		ids = malloc((size_t)u->live * sizeof(*ids));
		if(!ids) return NULL;
		for(c = u->conns; c; c = c->user_next){
			if(!c->is_service) ids[n++] = c->client_id;
		}
		qsort(ids, n, sizeof(*ids), cmp_str);
	}
	arr = json_array();
	/* One live connection per client id: a take-over in progress is one connection. */
	for(i = 0; arr && i < n; i++){
		if(i > 0 && !strcmp(ids[i], ids[i - 1])) continue;
		json_array_append_new(arr, json_string(ids[i]));
		distinct++;
	}
	free(ids);
	if(!arr) return NULL;
	doc = json_pack("{s:s, s:s, s:I, s:o, s:I, s:I}",
			"userId", user,
			"bootId", boot_id,
			"connections", (json_int_t)distinct,
			"clientIds", arr,
			"seq", (json_int_t)seq,
			"at", (json_int_t)now);
	if(!doc) return NULL;
	out = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return out;
}

size_t pn_sessions_flush(pn_sessions *s, const char *boot_id, unsigned long long *seq, long long now,
		pn_emit_fn emit, void *ctx)
{
	size_t emitted = 0;
	while(s->dirty){
		pn_user *u = s->dirty;
		char *json;
		s->dirty = u->dirty_next;
		u->dirty = 0;
		u->dirty_next = NULL;
		json = pn_sessions_snapshot(s, u->name, boot_id, ++(*seq), now);
		if(json){
			emit(u->name, json, ctx);
			free(json);
			emitted++;
		}
		if(u->live == 0 && !u->service_seen) user_forget(s, u);
	}
	return emitted;
}
