// cnitool13: the same libcni client as ../cnitool, built against libcni 1.3.0
// (Debian unstable's golang-github-appc-cni-dev, unpacked under build/ by
// getlibcni13.sh), which speaks spec 1.1.0 and so adds GC and STATUS.
//
//	cnitool13 add|check|del <network> <netns path>
//	cnitool13 gc|status|version <network>
//
// Environment: as ../cnitool (NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS,
// CAP_ARGS, CNI_CACHE_DIR, CNI_CONTAINERID), plus for gc VALID_ATTACHMENTS: a
// JSON list of {"containerID", "ifname"}; unset, libcni sends no list at all.
//
// On failure a plugin's CNI error is printed on stdout as one JSON document
// {"code", "msg", "details"} (other failures get code 999), exit status 1.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s add|check|del <network> <netns path>\n"+
		"       %s gc|status|version <network>\n", os.Args[0], os.Args[0])
	os.Exit(2)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "cnitool13: "+format+"\n", args...)
	os.Exit(1)
}

// failWith prints a plugin's CNI error as JSON on stdout, then fails.
func failWith(what string, err error) {
	out := types.Error{Code: types.ErrInternal, Msg: err.Error()}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out = *cniErr
	}
	doc, _ := json.Marshal(out)
	fmt.Println(string(doc))
	fail("%s: %v", what, err)
}

func parseArgs(raw string) [][2]string {
	var out [][2]string
	if raw == "" {
		return out
	}
	for _, pair := range strings.Split(raw, ";") {
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
			fail("invalid CNI_ARGS pair %q", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out
}

func containerID(netns string) string {
	if id := os.Getenv("CNI_CONTAINERID"); id != "" {
		return id
	}
	sum := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

func gcArgs() *libcni.GCArgs {
	raw, ok := os.LookupEnv("VALID_ATTACHMENTS")
	if !ok {
		return nil
	}
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	if err := json.Unmarshal([]byte(raw), &args.ValidAttachments); err != nil {
		fail("VALID_ATTACHMENTS: %v", err)
	}
	return args
}

// versions asks every plugin of the list for its versions (as a runtime's
// validation does) and prints {"<type>": {"cniVersion", "supportedVersions"}}.
func versions(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList) {
	out := map[string]interface{}{"libcniCurrent": version.Current()}
	for _, plugin := range list.Plugins {
		info, err := cni.GetVersionInfo(ctx, plugin.Network.Type)
		if err != nil {
			failWith("version", err)
		}
		out[plugin.Network.Type] = map[string]interface{}{
			"supportedVersions": info.SupportedVersions(),
		}
	}
	doc, _ := json.Marshal(out)
	fmt.Println(string(doc))
}

func runtimeConf(netnsArg string) *libcni.RuntimeConf {
	netns, err := filepath.Abs(netnsArg)
	if err != nil {
		fail("netns path: %v", err)
	}
	ifName := os.Getenv("CNI_IFNAME")
	if ifName == "" {
		ifName = "eth0"
	}
	capArgs := map[string]interface{}{}
	if raw := os.Getenv("CAP_ARGS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &capArgs); err != nil {
			fail("CAP_ARGS: %v", err)
		}
	}
	return &libcni.RuntimeConf{
		ContainerID:    containerID(netns),
		NetNS:          netns,
		IfName:         ifName,
		Args:           parseArgs(os.Getenv("CNI_ARGS")),
		CapabilityArgs: capArgs,
	}
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	cmd, name := os.Args[1], os.Args[2]
	confDir := os.Getenv("NETCONFPATH")
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	list, err := libcni.LoadConfList(confDir, name)
	if err != nil {
		fail("loading network %q from %s: %v", name, confDir, err)
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	cni := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv("CNI_CACHE_DIR"), nil)
	ctx := context.Background()

	switch cmd {
	case "gc":
		if err := cni.GCNetworkList(ctx, list, gcArgs()); err != nil {
			failWith("gc", err)
		}
		return
	case "status":
		if err := cni.GetStatusNetworkList(ctx, list); err != nil {
			failWith("status", err)
		}
		return
	case "version":
		versions(ctx, cni, list)
		return
	}
	if len(os.Args) < 4 {
		usage()
	}
	rt := runtimeConf(os.Args[3])
	switch cmd {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			failWith("add", err)
		}
		_ = result.Print()
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			failWith("check", err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			failWith("del", err)
		}
	default:
		usage()
	}
}
