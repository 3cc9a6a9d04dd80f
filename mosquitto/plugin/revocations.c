/* Revoked tokens: see revocations.h. No Mosquitto includes. */
#include "revocations.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_ENTRIES 1000000
#define MAX_KICK_QUEUE 65536
#define MIN_BUCKETS 64

typedef struct entry {
	struct entry *next;
	char kind; /* 'S' session, 'U' user */
	char user[PN_REV_ID_MAX + 1];
	char sid[PN_REV_ID_MAX + 1];
	long long not_before;
	long long until;
} entry;

struct pn_revocations {
	entry **buckets;
	size_t nbuckets;
	size_t size;
	size_t max_entries;
	char boot_id[PN_REV_BOOT_MAX + 1];
	int synced;
	char **kicks;
	size_t nkicks;
	size_t kick_cap;
	pn_rev_live_fn is_live; /* set for the duration of one pn_rev_apply */
	void *live_ctx;
};

static unsigned long long fnv(unsigned long long h, const char *s)
{
	while(*s){
		h ^= (unsigned char)*s++;
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t slot(const pn_revocations *r, char kind, const char *user, const char *sid)
{
	unsigned long long h = 14695981039346656037ULL;
	char k[2] = {kind, '\0'};
	h = fnv(h, k);
	h = fnv(h, user);
	h ^= 0xff;
	h *= 1099511628211ULL;
	h = fnv(h, sid);
	return (size_t)(h & (r->nbuckets - 1));
}

pn_revocations *pn_rev_new(size_t max_entries, const char *boot_id)
{
	pn_revocations *r = calloc(1, sizeof(*r));
	if(!r) return NULL;
	r->nbuckets = MIN_BUCKETS;
	r->buckets = calloc(r->nbuckets, sizeof(entry *));
	if(!r->buckets){
		free(r);
		return NULL;
	}
	r->max_entries = max_entries ? max_entries : DEFAULT_MAX_ENTRIES;
	if(boot_id){
		strncpy(r->boot_id, boot_id, PN_REV_BOOT_MAX);
		r->boot_id[PN_REV_BOOT_MAX] = '\0';
	}
	return r;
}

void pn_rev_free(pn_revocations *r)
{
	size_t i;
	entry *e, *next;
	if(!r) return;
	for(i = 0; i < r->nbuckets; i++){
		for(e = r->buckets[i]; e; e = next){
			next = e->next;
			free(e);
		}
	}
	for(i = 0; i < r->nkicks; i++) free(r->kicks[i]);
	free(r->kicks);
	free(r->buckets);
	free(r);
}

static entry *find(const pn_revocations *r, char kind, const char *user, const char *sid)
{
	entry *e;
	for(e = r->buckets[slot(r, kind, user, sid)]; e; e = e->next){
		if(e->kind == kind && !strcmp(e->user, user) && !strcmp(e->sid, sid)) return e;
	}
	return NULL;
}

static int grow(pn_revocations *r)
{
	size_t n = r->nbuckets * 2, i;
	entry **old = r->buckets, *e, *next;
	size_t oldn = r->nbuckets;
	entry **nb = calloc(n, sizeof(entry *));
	if(!nb) return -1;
	r->buckets = nb;
	r->nbuckets = n;
	for(i = 0; i < oldn; i++){
		for(e = old[i]; e; e = next){
			size_t s;
			next = e->next;
			s = slot(r, e->kind, e->user, e->sid);
			e->next = nb[s];
			nb[s] = e;
		}
	}
	free(old);
	return 0;
}

static int queue_kick(pn_revocations *r, const char *user)
{
	size_t i;
	char *copy;
	if(r->is_live && !r->is_live(user, r->live_ctx)) return 0; /* nothing to close */
	for(i = 0; i < r->nkicks; i++){
		if(!strcmp(r->kicks[i], user)) return 0; /* already queued */
	}
	if(r->nkicks >= MAX_KICK_QUEUE) return 0; /* the TICK drains it long before */
	if(r->nkicks == r->kick_cap){
		size_t cap = r->kick_cap ? r->kick_cap * 2 : 16;
		char **k = realloc(r->kicks, cap * sizeof(char *));
		if(!k) return -1;
		r->kicks = k;
		r->kick_cap = cap;
	}
	copy = strdup(user);
	if(!copy) return -1;
	r->kicks[r->nkicks++] = copy;
	return 0;
}

/* ------------------------------------------------------------------ parsing */

static int valid_id(const char *s, size_t len)
{
	size_t i;
	if(len == 0 || len > PN_REV_ID_MAX) return 0;
	for(i = 0; i < len; i++){
		char c = s[i];
		if(!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')){
			return 0;
		}
	}
	return 1;
}

static int parse_time(const char *s, size_t len, long long *out)
{
	size_t i;
	long long v = 0;
	if(len == 0 || len > 12) return 0; /* unix seconds: far beyond year 9999 in 12 digits */
	for(i = 0; i < len; i++){
		if(s[i] < '0' || s[i] > '9') return 0;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 1;
}

/* Splits one line into at most 4 fields on single spaces; returns the field count or -1. */
static int split(const char *line, size_t len, const char *f[4], size_t fl[4])
{
	int n = 0;
	size_t start = 0, i;
	for(i = 0; i <= len; i++){
		if(i == len || line[i] == ' '){
			if(n == 4 || i == start) return -1;
			f[n] = line + start;
			fl[n] = i - start;
			n++;
			start = i + 1;
		}
	}
	return n;
}

static int apply_line(pn_revocations *r, const char *line, size_t len, long long now, pn_rev_stats *st)
{
	const char *f[4];
	size_t fl[4];
	char user[PN_REV_ID_MAX + 1], sid[PN_REV_ID_MAX + 1];
	long long t1 = 0, until = 0;
	char kind;
	entry *e;
	int n = split(line, len, f, fl);

	if(n == 2 && fl[0] == 4 && !memcmp(f[0], "SYNC", 4)){
		if(fl[1] <= PN_REV_BOOT_MAX && fl[1] == strlen(r->boot_id) && !memcmp(f[1], r->boot_id, fl[1])){
			r->synced = 1;
			st->synced = 1;
		}
		return 0;
	}
	if(n != 4 || fl[0] != 1 || (f[0][0] != 'S' && f[0][0] != 'U') || !valid_id(f[1], fl[1])
			|| !parse_time(f[3], fl[3], &until)){
		st->malformed++;
		return 0;
	}
	kind = f[0][0];
	memcpy(user, f[1], fl[1]);
	user[fl[1]] = '\0';
	sid[0] = '\0';
	if(kind == 'S'){
		if(!valid_id(f[2], fl[2])){
			st->malformed++;
			return 0;
		}
		memcpy(sid, f[2], fl[2]);
		sid[fl[2]] = '\0';
	}else if(!parse_time(f[2], fl[2], &t1)){
		st->malformed++;
		return 0;
	}
	if(now >= until){
		st->expired++;
		return 0;
	}
	e = find(r, kind, user, sid);
	if(e){
		int changed = t1 > e->not_before;
		if(t1 > e->not_before) e->not_before = t1;
		if(until > e->until) e->until = until;
		st->applied++;
		return changed ? queue_kick(r, user) : 0;
	}
	if(r->size >= r->max_entries){
		pn_rev_prune(r, now);
		if(r->size >= r->max_entries){
			st->full++;
			return queue_kick(r, user); /* cannot remember it, but can still end the sessions */
		}
	}
	if(r->size >= r->nbuckets && grow(r)) return -1;
	e = calloc(1, sizeof(*e));
	if(!e) return -1;
	e->kind = kind;
	memcpy(e->user, user, sizeof(user));
	memcpy(e->sid, sid, sizeof(sid));
	e->not_before = t1;
	e->until = until;
	{
		size_t s = slot(r, kind, user, sid);
		e->next = r->buckets[s];
		r->buckets[s] = e;
	}
	r->size++;
	st->applied++;
	return queue_kick(r, user);
}

int pn_rev_apply(pn_revocations *r, const char *payload, size_t len, long long now,
		pn_rev_live_fn is_live, void *ctx, pn_rev_stats *stats)
{
	size_t start = 0, i;
	int rc = 0;
	pn_rev_stats local;
	pn_rev_stats *st = stats ? stats : &local;
	memset(st, 0, sizeof(*st));
	if(!payload) return 0;
	r->is_live = is_live;
	r->live_ctx = ctx;
	for(i = 0; i <= len && rc == 0; i++){
		if(i == len || payload[i] == '\n'){
			size_t l = i - start;
			if(l > 0 && payload[start + l - 1] == '\r') l--;
			if(l > 0) rc = apply_line(r, payload + start, l, now, st);
			start = i + 1;
		}
	}
	r->is_live = NULL;
	r->live_ctx = NULL;
	return rc;
}

int pn_rev_is_revoked(const pn_revocations *r, const char *user, const char *sid, long long iat,
		long long now)
{
	const entry *e;
	if(!r || !user) return 0;
	if(strlen(user) > PN_REV_ID_MAX) return 0;
	if(sid && *sid && strlen(sid) <= PN_REV_ID_MAX){
		e = find(r, 'S', user, sid);
		if(e && now < e->until) return 1;
	}
	e = find(r, 'U', user, "");
	if(e && now < e->until && (iat < 0 || iat < e->not_before)) return 1;
	return 0;
}

int pn_rev_synced(const pn_revocations *r)
{
	return r && r->synced;
}

size_t pn_rev_take_kicks(pn_revocations *r, char **out, size_t max)
{
	size_t n = r->nkicks < max ? r->nkicks : max;
	memcpy(out, r->kicks, n * sizeof(char *));
	memmove(r->kicks, r->kicks + n, (r->nkicks - n) * sizeof(char *));
	r->nkicks -= n;
	return n;
}

void pn_rev_prune(pn_revocations *r, long long now)
{
	size_t i;
	for(i = 0; i < r->nbuckets; i++){
		entry **pp = &r->buckets[i];
		while(*pp){
			entry *e = *pp;
			if(now >= e->until){
				*pp = e->next;
				free(e);
				r->size--;
			}else{
				pp = &e->next;
			}
		}
	}
}

size_t pn_rev_size(const pn_revocations *r)
{
	return r ? r->size : 0;
}
