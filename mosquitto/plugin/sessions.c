/* Live-connection bookkeeping (see sessions.h). */
#include "sessions.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One per user id, sized to it: the id is stored once and shared by the user's records. */
struct pn_user {
	pn_conn *conns;        /* live records, linked via user_next */
	uint32_t live;         /* records in `conns` */
	uint32_t refs;         /* live + departed records pointing here */
	uint8_t service_seen;  /* authenticated with role service since start */
	uint8_t queued;        /* waiting in the snapshot queue */
	uint8_t announced;     /* told online (a snapshot or a full picture): its going offline is due */
	char name[];
};

/* Open addressing (linear probing, power-of-two size, load <= 1/2) of record pointers. */
typedef struct table {
	void **slots;
	size_t mask, count;
} table;

struct pn_sessions {
	pn_client_id_fn client_id_of;
	table conns;           /* pn_conn * by client pointer */
	table users;           /* pn_user * by name */
	pn_conn **heap;        /* live records, min-heap on exp */
	size_t heap_len, heap_cap;
	pn_user **queue;       /* users waiting for a snapshot, FIFO from queue_head */
	size_t queue_head, queue_len, queue_cap;
	pn_conn *departed;     /* linked via user_next */
	size_t departed_count;
};

#define INITIAL_SLOTS 256

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

static size_t conn_hash(const void *rec) { return hash_ptr(((const pn_conn *)rec)->client); }
static size_t user_hash(const void *rec) { return hash_str(((const pn_user *)rec)->name); }

/* ------------------------------------------------------------------ table */

static int table_init(table *t)
{
	t->slots = calloc(INITIAL_SLOTS, sizeof(*t->slots));
	t->mask = INITIAL_SLOTS - 1;
	t->count = 0;
	return t->slots ? 0 : -1;
}

static void table_place(table *t, void *rec, size_t (*hash)(const void *))
{
	size_t i = hash(rec) & t->mask;
	while(t->slots[i]) i = (i + 1) & t->mask;
	t->slots[i] = rec;
}

/* Grows (doubling) or shrinks (halving) so the load stays between 1/8 and 1/2. */
static int table_resize(table *t, size_t nslots, size_t (*hash)(const void *))
{
	void **old = t->slots;
	size_t oldn = t->mask + 1, i;
	void **ns = calloc(nslots, sizeof(*ns));
	if(!ns) return -1;
	t->slots = ns;
	t->mask = nslots - 1;
	for(i = 0; i < oldn; i++){
		if(old[i]) table_place(t, old[i], hash);
	}
	free(old);
	return 0;
}

static int table_insert(table *t, void *rec, size_t (*hash)(const void *))
{
	if((t->count + 1) * 2 > t->mask + 1 && table_resize(t, (t->mask + 1) * 2, hash)){
		if(t->count + 1 > t->mask) return -1; /* full: only a resize could make room */
	}
	table_place(t, rec, hash);
	t->count++;
	return 0;
}

/* Deletes slot i with backward shifting (no tombstones), then maybe shrinks. */
static void table_delete_at(table *t, size_t i, size_t (*hash)(const void *))
{
	size_t j = i, k;
	t->slots[i] = NULL;
	for(;;){
		j = (j + 1) & t->mask;
		if(!t->slots[j]) break;
		k = hash(t->slots[j]) & t->mask;
		/* Move slots[j] back to i unless its home k lies cyclically in (i, j]. */
		if((i <= j) ? (i < k && k <= j) : (i < k || k <= j)) continue;
		t->slots[i] = t->slots[j];
		t->slots[j] = NULL;
		i = j;
	}
	t->count--;
	if(t->mask + 1 > INITIAL_SLOTS && t->count * 8 < t->mask + 1){
		table_resize(t, (t->mask + 1) / 2, hash); /* on failure the table just stays big */
	}
}

static pn_conn *conn_lookup(const pn_sessions *s, const void *client, size_t *slot)
{
	size_t i = hash_ptr(client) & s->conns.mask;
	pn_conn *c;
	while((c = s->conns.slots[i]) != NULL){
		if(c->client == client){
			if(slot) *slot = i;
			return c;
		}
		i = (i + 1) & s->conns.mask;
	}
	return NULL;
}

static pn_user *user_lookup(const pn_sessions *s, const char *name, size_t *slot)
{
	size_t i = hash_str(name) & s->users.mask;
	pn_user *u;
	while((u = s->users.slots[i]) != NULL){
		if(!strcmp(u->name, name)){
			if(slot) *slot = i;
			return u;
		}
		i = (i + 1) & s->users.mask;
	}
	return NULL;
}

/* ------------------------------------------------------------------ expiry heap */

static void heap_set(pn_sessions *s, size_t i, pn_conn *c)
{
	s->heap[i] = c;
	c->heap_index = (uint32_t)i;
}

static void heap_up(pn_sessions *s, size_t i)
{
	pn_conn *c = s->heap[i];
	while(i > 0){
		size_t p = (i - 1) / 2;
		if(s->heap[p]->exp <= c->exp) break;
		heap_set(s, i, s->heap[p]);
		i = p;
	}
	heap_set(s, i, c);
}

static void heap_down(pn_sessions *s, size_t i)
{
	pn_conn *c = s->heap[i];
	for(;;){
		size_t l = 2 * i + 1, m = i;
		long long best = c->exp;
		if(l < s->heap_len && s->heap[l]->exp < best){
			m = l;
			best = s->heap[l]->exp;
		}
		if(l + 1 < s->heap_len && s->heap[l + 1]->exp < best) m = l + 1;
		if(m == i) break;
		heap_set(s, i, s->heap[m]);
		i = m;
	}
	heap_set(s, i, c);
}

static int heap_push(pn_sessions *s, pn_conn *c)
{
	if(s->heap_len == s->heap_cap){
		size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
		pn_conn **h = realloc(s->heap, cap * sizeof(*h));
		if(!h) return -1;
		s->heap = h;
		s->heap_cap = cap;
	}
	heap_set(s, s->heap_len++, c);
	heap_up(s, s->heap_len - 1);
	return 0;
}

static void heap_remove(pn_sessions *s, pn_conn *c)
{
	size_t i = c->heap_index;
	pn_conn *last;
	if(i == PN_NOT_IN_HEAP || i >= s->heap_len || s->heap[i] != c) return;
	c->heap_index = PN_NOT_IN_HEAP;
	last = s->heap[--s->heap_len];
	if(i < s->heap_len){
		heap_set(s, i, last);
		heap_up(s, i);
		heap_down(s, last->heap_index);
	}
	/* Give memory back after a mass disconnect. */
	if(s->heap_cap > 256 && s->heap_len * 4 < s->heap_cap){
		pn_conn **h = realloc(s->heap, (s->heap_cap / 2) * sizeof(*h));
		if(h){
			s->heap = h;
			s->heap_cap /= 2;
		}
	}
}

/* ------------------------------------------------------------------ lifecycle */

pn_sessions *pn_sessions_new(pn_client_id_fn client_id_of)
{
	pn_sessions *s;
	if(!client_id_of) return NULL;
	s = calloc(1, sizeof(*s));
	if(!s) return NULL;
	s->client_id_of = client_id_of;
	if(table_init(&s->conns) || table_init(&s->users)){
		pn_sessions_free(s);
		return NULL;
	}
	return s;
}

void pn_sessions_free(pn_sessions *s)
{
	size_t i;
	if(!s) return;
	for(i = 0; s->conns.slots && i <= s->conns.mask; i++) free(s->conns.slots[i]);
	for(i = 0; s->users.slots && i <= s->users.mask; i++) free(s->users.slots[i]);
	free(s->conns.slots);
	free(s->users.slots);
	free(s->heap);
	free(s->queue);
	free(s);
}

const char *pn_conn_user(const pn_conn *c)
{
	return c->owner->name;
}

const char *pn_conn_client_id(const pn_sessions *s, const pn_conn *c)
{
	const char *id = c->departed ? NULL : s->client_id_of(c->client);
	return id ? id : "";
}

size_t pn_sessions_size(const pn_sessions *s)
{
	return s->conns.count - s->departed_count;
}

size_t pn_sessions_users(const pn_sessions *s)
{
	return s->users.count;
}

size_t pn_sessions_pending(const pn_sessions *s)
{
	return s->queue_len - s->queue_head;
}

/* ------------------------------------------------------------------ users */

static pn_user *user_get(pn_sessions *s, const char *name)
{
	pn_user *u = user_lookup(s, name, NULL);
	size_t len;
	if(u) return u;
	len = strlen(name);
	u = calloc(1, sizeof(*u) + len + 1);
	if(!u) return NULL;
	memcpy(u->name, name, len + 1);
	if(table_insert(&s->users, u, user_hash)){
		free(u);
		return NULL;
	}
	return u;
}

/* Frees a user nothing refers to any more (service users are remembered for their role). */
static void user_maybe_forget(pn_sessions *s, pn_user *u)
{
	size_t slot;
	if(u->refs || u->queued || u->service_seen || u->announced) return;
	if(user_lookup(s, u->name, &slot) == u) table_delete_at(&s->users, slot, user_hash);
	free(u);
}

static void enqueue(pn_sessions *s, pn_user *u)
{
	if(u->queued) return;
	if(s->queue_head > 0 && s->queue_head == s->queue_len){
		s->queue_head = s->queue_len = 0;
	}
	if(s->queue_len == s->queue_cap){
		if(s->queue_head > s->queue_cap / 2){
			/* Mostly consumed: slide the rest down instead of growing. */
			memmove(s->queue, s->queue + s->queue_head, (s->queue_len - s->queue_head) * sizeof(*s->queue));
			s->queue_len -= s->queue_head;
			s->queue_head = 0;
		}else{
			size_t cap = s->queue_cap ? s->queue_cap * 2 : 256;
			pn_user **q = realloc(s->queue, cap * sizeof(*q));
			if(!q) return; /* no snapshot for this change; the next change retries */
			s->queue = q;
			s->queue_cap = cap;
		}
	}
	s->queue[s->queue_len++] = u;
	u->queued = 1;
}

int pn_sessions_is_service_user(const pn_sessions *s, const char *user)
{
	const pn_user *u = user ? user_lookup(s, user, NULL) : NULL;
	return u && u->service_seen;
}

/* ------------------------------------------------------------------ connections */

pn_conn *pn_sessions_find(const pn_sessions *s, const void *client)
{
	return conn_lookup(s, client, NULL);
}

int pn_sessions_count_other(const pn_sessions *s, const char *user, const char *client_id)
{
	const pn_user *u = user_lookup(s, user, NULL);
	const pn_conn *c;
	int n = 0;
	if(!u) return 0;
	for(c = u->conns; c; c = c->user_next){
		if(!client_id || strcmp(pn_conn_client_id(s, c), client_id) != 0) n++;
	}
	return n;
}

static int user_has_client_id(const pn_sessions *s, const char *user, const char *client_id)
{
	const pn_user *u = user_lookup(s, user, NULL);
	const pn_conn *c;
	if(!u) return 0;
	for(c = u->conns; c; c = c->user_next){
		if(!strcmp(pn_conn_client_id(s, c), client_id)) return 1;
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

/* Takes a live record out of its user's list, the heap and the live accounting. */
static void unlink_live(pn_sessions *s, pn_conn *c)
{
	pn_user *u = c->owner;
	pn_conn **pp = &u->conns;
	while(*pp && *pp != c) pp = &(*pp)->user_next;
	if(*pp) *pp = c->user_next;
	c->user_next = NULL;
	u->live--;
	heap_remove(s, c);
	if(!c->is_service) enqueue(s, u);
}

/* Takes a record out of the pointer table (live or departed) and frees it. */
static void drop(pn_sessions *s, pn_conn *c, size_t slot)
{
	pn_user *u = c->owner;
	table_delete_at(&s->conns, slot, conn_hash);
	if(c->departed){
		pn_conn **dp = &s->departed;
		while(*dp && *dp != c) dp = &(*dp)->user_next;
		if(*dp) *dp = c->user_next;
		s->departed_count--;
	}else{
		unlink_live(s, c);
	}
	u->refs--;
	free(c);
	user_maybe_forget(s, u);
}

int pn_sessions_remove(pn_sessions *s, const void *client)
{
	size_t slot;
	pn_conn *c = conn_lookup(s, client, &slot);
	if(!c) return 0;
	drop(s, c, slot);
	return 1;
}

int pn_sessions_set_exp(pn_sessions *s, const void *client, long long exp)
{
	pn_conn *c = pn_sessions_find(s, client);
	if(!c || c->departed || c->heap_index == PN_NOT_IN_HEAP) return 0;
	c->exp = exp;
	c->kick_attempts = 0;
	heap_up(s, c->heap_index);
	heap_down(s, c->heap_index);
	return 1;
}

int pn_sessions_depart(pn_sessions *s, const void *client)
{
	pn_conn *c = pn_sessions_find(s, client);
	if(!c || c->departed) return 0;
	unlink_live(s, c);
	c->departed = 1;
	c->user_next = s->departed;
	s->departed = c;
	s->departed_count++;
	return 1;
}

void pn_sessions_reap(pn_sessions *s)
{
	while(s->departed){
		size_t slot;
		pn_conn *c = conn_lookup(s, s->departed->client, &slot);
		if(c != s->departed){ /* cannot happen: every departed record is in the table */
			s->departed = s->departed->user_next;
			s->departed_count--;
			continue;
		}
		drop(s, c, slot);
	}
}

int pn_sessions_add(pn_sessions *s, const void *client, const char *user, long long exp, int is_service)
{
	pn_conn *c;
	pn_user *u;

	/* A pointer is reused only after its DISCONNECT, but never trust that blindly. */
	pn_sessions_remove(s, client);

	u = user_get(s, user);
	if(!u) return -1;
	c = calloc(1, sizeof(*c));
	if(!c){
		user_maybe_forget(s, u);
		return -1;
	}
	c->client = client;
	c->owner = u;
	c->exp = exp;
	c->is_service = is_service ? 1 : 0;
	c->heap_index = PN_NOT_IN_HEAP;
	if(table_insert(&s->conns, c, conn_hash)){
		free(c);
		user_maybe_forget(s, u);
		return -1;
	}
	if(heap_push(s, c)){
		size_t slot;
		if(conn_lookup(s, client, &slot) == c) table_delete_at(&s->conns, slot, conn_hash);
		free(c);
		user_maybe_forget(s, u);
		return -1;
	}
	u->refs++;
	c->user_next = u->conns;
	u->conns = c;
	u->live++;
	if(is_service) u->service_seen = 1;
	else enqueue(s, u);
	return 0;
}

/* Every heap entry under index i (itself included) with exp <= limit: the heap's expired top. */
static void collect_expired(const pn_sessions *s, size_t i, long long limit, pn_conn **out, size_t max, size_t *n)
{
	if(i >= s->heap_len || *n >= max || s->heap[i]->exp > limit) return;
	out[(*n)++] = s->heap[i];
	collect_expired(s, 2 * i + 1, limit, out, max, n);
	collect_expired(s, 2 * i + 2, limit, out, max, n);
}

size_t pn_sessions_expired(const pn_sessions *s, long long now, long leeway, pn_conn **out, size_t max)
{
	size_t n = 0;
	/* now - leeway >= exp */
	collect_expired(s, 0, now - leeway, out, max, &n);
	return n;
}

/* ------------------------------------------------------------------ snapshots */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

#define SMALL_IDS 16

/*
 * Appends `"connections":N,"clientIds":[...]` for user u (NULL: none) at buf + len, snprintf
 * style: returns the length the text needs (which may be >= buflen: then it is cut, but
 * terminated when buflen > 0), or (size_t)-1 on out of memory.
 */
static size_t put_connections(const pn_sessions *s, const pn_user *u, char *buf, size_t buflen, size_t len)
{
	const pn_conn *c;
	const char *small[SMALL_IDS], **ids = small;
	size_t n = 0, i, distinct = 0;
	int w;

	if(u && u->live > SMALL_IDS){
		ids = malloc((size_t)u->live * sizeof(*ids));
		if(!ids) return (size_t)-1;
	}
	if(u){
		for(c = u->conns; c; c = c->user_next){
			if(!c->is_service) ids[n++] = pn_conn_client_id(s, c);
		}
	}
	qsort(ids, n, sizeof(*ids), cmp_str);
	/* One live connection per client id: a take-over in progress is one connection. */
	for(i = 0; i < n; i++){
		if(i == 0 || strcmp(ids[i], ids[i - 1])) distinct++;
	}
	/* User ids, boot ids and client ids are [A-Za-z0-9_.:-]: nothing needs JSON escaping. */
#define PUT(...) do { \
		w = snprintf(buf + (len < buflen ? len : buflen), len < buflen ? buflen - len : 0, __VA_ARGS__); \
		if(w > 0) len += (size_t)w; \
	} while(0)
	PUT("\"connections\":%zu,\"clientIds\":[", distinct);
	for(i = 0; i < n; i++){
		if(i > 0 && !strcmp(ids[i], ids[i - 1])) continue;
		PUT("%s\"%s\"", i ? "," : "", ids[i]);
	}
	PUT("]");
#undef PUT
	if(ids != small) free((void *)ids);
	return len;
}

size_t pn_sessions_snapshot(const pn_sessions *s, const char *user, const char *boot_id,
		unsigned long long seq, long long now, char *buf, size_t buflen)
{
	const pn_user *u = user_lookup(s, user, NULL);
	size_t len;
	int w;

	w = snprintf(buf, buflen, "{\"userId\":\"%s\",\"bootId\":\"%s\",", user, boot_id);
	len = w > 0 ? (size_t)w : 0;
	len = put_connections(s, u, buf, buflen, len);
	if(len == (size_t)-1) return len;
	w = snprintf(buf + (len < buflen ? len : buflen), len < buflen ? buflen - len : 0,
			",\"seq\":%llu,\"at\":%lld}", seq, now);
	if(w > 0) len += (size_t)w;
	return len;
}

/* Has a live connection that is announced (not a service's). */
static int user_online(const pn_user *u)
{
	const pn_conn *c;
	for(c = u->conns; c; c = c->user_next){
		if(!c->is_service) return 1;
	}
	return 0;
}

/* Builds the snapshot into buf, or into a malloc'd buffer when it does not fit (*heap set). */
static char *snapshot_text(const pn_sessions *s, const pn_user *u, const char *boot_id,
		unsigned long long seq, long long now, char *buf, size_t buflen, char **heap)
{
	size_t need = pn_sessions_snapshot(s, u->name, boot_id, seq, now, buf, buflen);
	*heap = NULL;
	if(need == (size_t)-1) return NULL;
	if(need < buflen) return buf;
	*heap = malloc(need + 1);
	if(!*heap) return NULL;
	pn_sessions_snapshot(s, u->name, boot_id, seq, now, *heap, need + 1);
	return *heap;
}

size_t pn_sessions_flush(pn_sessions *s, const char *boot_id, unsigned long long *seq, long long now,
		size_t budget, pn_emit_fn emit, void *ctx)
{
	size_t emitted = 0;
	char buf[1024], *heap, *json;
	int online;

	while(s->queue_head < s->queue_len && emitted < budget){
		pn_user *u = s->queue[s->queue_head++];
		u->queued = 0;
		online = user_online(u);
		if(!online && !u->announced){
			/* Came and went between two flushes: nobody was told, nothing to take back. */
			user_maybe_forget(s, u);
			continue;
		}
		json = snapshot_text(s, u, boot_id, ++(*seq), now, buf, sizeof(buf), &heap);
		if(!json){
			enqueue(s, u); /* out of memory: try again next time */
			break;
		}
		emit(u->name, json, ctx);
		u->announced = online ? 1 : 0;
		free(heap);
		emitted++;
		user_maybe_forget(s, u);
	}
	if(s->queue_head == s->queue_len){
		s->queue_head = s->queue_len = 0;
		if(s->queue_cap > 256){
			free(s->queue);
			s->queue = NULL;
			s->queue_cap = 0;
		}
	}
	return emitted;
}

/* ------------------------------------------------------------------ the whole picture */

/* A growing text buffer; `failed` once an allocation failed (then the text is useless). */
typedef struct text {
	char *p;
	size_t len, cap;
	int failed;
} text;

static int text_reserve(text *t, size_t need)
{
	char *p;
	size_t cap = t->cap ? t->cap : 4096;
	if(t->failed) return -1;
	if(need < t->cap) return 0;
	while(cap <= need) cap *= 2;
	p = realloc(t->p, cap);
	if(!p){
		t->failed = 1;
		return -1;
	}
	t->p = p;
	t->cap = cap;
	return 0;
}

static void text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *fmt, ...)
{
	va_list ap;
	int w;
	if(text_reserve(t, t->len + 256)) return;
	va_start(ap, fmt);
	w = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if(w < 0){
		t->failed = 1;
		return;
	}
	if((size_t)w >= t->cap - t->len){
		if(text_reserve(t, t->len + (size_t)w + 1)) return;
		va_start(ap, fmt);
		vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
	}
	t->len += (size_t)w;
}

static void text_connections(const pn_sessions *s, const pn_user *u, text *t)
{
	size_t need;
	if(text_reserve(t, t->len + 256)) return;
	need = put_connections(s, u, t->p, t->cap, t->len);
	if(need == (size_t)-1){
		t->failed = 1;
		return;
	}
	if(need >= t->cap){
		if(text_reserve(t, need + 1)) return;
		need = put_connections(s, u, t->p, t->cap, t->len);
	}
	t->len = need;
}

size_t pn_sessions_online_users(const pn_sessions *s)
{
	size_t i, n = 0;
	for(i = 0; i <= s->users.mask; i++){
		const pn_user *u = s->users.slots[i];
		if(u && user_online(u)) n++;
	}
	return n;
}

static void open_part(text *t, const char *boot_id, const char *request_id, unsigned long long seq,
		long long now, size_t part, size_t parts)
{
	text_printf(t, "{\"bootId\":\"%s\",\"requestId\":\"%s\",\"seq\":%llu,\"at\":%lld,"
			"\"part\":%zu,\"parts\":%zu,\"sessions\":[", boot_id, request_id, seq, now, part, parts);
}

/* Ends a part; parts are kept one after the other in t, each ended by a NUL. */
static void close_part(text *t)
{
	text_printf(t, "]}");
	if(text_reserve(t, t->len + 1) == 0) t->p[t->len++] = '\0';
}

long pn_sessions_snapshot_all(pn_sessions *s, const char *boot_id, const char *request_id,
		unsigned long long seq, long long now, size_t max_parts, size_t min_users_per_part,
		pn_chunk_fn emit, void *ctx)
{
	size_t online = pn_sessions_online_users(s), per_part, parts, part = 0, in_part = 0, i;
	text t = {0};

	if(max_parts == 0) max_parts = 1;
	if(min_users_per_part == 0) min_users_per_part = 1;
	per_part = (online + max_parts - 1) / max_parts;
	if(per_part < min_users_per_part) per_part = min_users_per_part;
	parts = online ? (online + per_part - 1) / per_part : 1;

	/* Every part is built before any is emitted: all or nothing, out of memory included. */
	for(i = 0; i <= s->users.mask; i++){
		const pn_user *u = s->users.slots[i];
		if(!u || !user_online(u)) continue;
		if(in_part == 0) open_part(&t, boot_id, request_id, seq, now, ++part, parts);
		text_printf(&t, "%s{\"userId\":\"%s\",", in_part ? "," : "", u->name);
		text_connections(s, u, &t);
		text_printf(&t, "}");
		if(++in_part == per_part){
			close_part(&t);
			in_part = 0;
		}
	}
	if(part == 0){
		open_part(&t, boot_id, request_id, seq, now, ++part, parts); /* nobody online: one empty part */
		close_part(&t);
	}else if(in_part){
		close_part(&t);
	}
	if(t.failed){
		free(t.p);
		return -1;
	}
	/* Now everyone in it was told "online": their departure must be announced. */
	for(i = 0; i <= s->users.mask; i++){
		pn_user *u = s->users.slots[i];
		if(u && user_online(u)) u->announced = 1;
	}
	for(i = 0; i < t.len; ){
		size_t len = strlen(t.p + i);
		emit(t.p + i, len, ctx);
		i += len + 1;
	}
	free(t.p);
	return (long)parts;
}
