/* LD_PRELOAD shim for the benchmark's Janus: let it gather ICE candidates on 127.0.0.1.
 *
 * Janus enumerates interfaces with getifaddrs() and skips every interface flagged
 * IFF_LOOPBACK, so `ice_enforce_list = "lo"` alone leaves it with no address and libnice
 * falls back to the machine's other interfaces. This shim clears IFF_LOOPBACK on the loopback
 * entries (nothing else changes; the list is not re-linked, so freeifaddrs() stays valid);
 * with `ice_enforce_list = "lo"` Janus then offers 127.0.0.1 host candidates only.
 *
 * Built by bench/janus.py:  cc -shared -fPIC -O2 -o janus_loopback.so janus_loopback.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
	static int (*real_getifaddrs)(struct ifaddrs **) = NULL;
	if(real_getifaddrs == NULL)
		real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	if(real_getifaddrs == NULL)
		return -1;
	int rc = real_getifaddrs(ifap);
	if(rc != 0 || ifap == NULL)
		return rc;
	for(struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next) {
		if(ifa->ifa_flags & IFF_LOOPBACK)
			ifa->ifa_flags &= ~IFF_LOOPBACK;
	}
	return rc;
}
