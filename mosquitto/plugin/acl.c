/* Topic rights (see acl.h). */
#include "acl.h"

#include <string.h>

#include "token.h"

#define USERS_PREFIX "users/"
#define RECEIPTS_LEVEL "/receipts"

const char *pn_strip_share(const char *filter)
{
	const char *group, *slash;

	if(!filter) return NULL;
	if(strncmp(filter, "$share/", 7) != 0) return filter;
	group = filter + 7;
	slash = strchr(group, '/');
	if(!slash || slash == group || !slash[1]) return NULL;
	return slash + 1;
}

/* Length of "users/{user}/" when `topic` starts with it and has something after it, else 0. */
static size_t inside_user_root(const char *user, const char *topic)
{
	size_t plen = strlen(USERS_PREFIX), ulen = strlen(user);

	if(strncmp(topic, USERS_PREFIX, plen) != 0) return 0;
	if(strncmp(topic + plen, user, ulen) != 0) return 0;
	if(topic[plen + ulen] != '/' || topic[plen + ulen + 1] == '\0') return 0;
	return plen + ulen + 1;
}

int pn_acl_allows(const char *user, int is_service, const char *topic, int access, int retain)
{
	size_t root;

	if(!topic || !topic[0]) return 0;
	if(is_service) return 1;
	if(!pn_valid_user_id(user)) return 0;

	switch(access){
		case PN_ACCESS_UNSUBSCRIBE:
			return 1; /* dropping a subscription never leaks anything */
		case PN_ACCESS_SUBSCRIBE:
			/* Shared subscriptions are for services; users never get one, whatever the filter. */
			if(pn_strip_share(topic) != topic) return 0;
			return inside_user_root(user, topic) > 0;
		case PN_ACCESS_READ:
			/* Topic names never carry wildcards (Mosquitto validated them). */
			return inside_user_root(user, topic) > 0;
		case PN_ACCESS_WRITE:
			if(retain) return 0;
			root = inside_user_root(user, topic);
			return root > 0 && strcmp(topic + root - 1, RECEIPTS_LEVEL) == 0;
		default:
			return 0;
	}
}
