// Issue 17's "done when": a docker user's shell script, with `docker` a function that runs
// lamina, goes through unchanged: pull through a mirror (a pull-through cache trusted by a
// certs.d CA named myca.crt, its password from $REGISTRY_AUTH_FILE), list, filter, format, quiet
// IDs, digests, create with env and labels, cp, commit with changes, export, save | load, push.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "registry_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

TEST(DockerScript, a_docker_users_script_runs_against_lamina) {
    REQUIRE_REGISTRY();
    REQUIRE_FUSE();
    TempDir tmp("lamina-script");
    RegistryEnv env;
    Registry upstream;
    auto built = push_demo(upstream, tmp, "team/app:v1");
    CacheMirror mirror(env, upstream, tmp / "auth.json");
    const Registry& cache = mirror.cache;
    write_file(tmp / "note.txt", "from the host\n");

    std::string up = upstream.host();
    std::string script = R"SH(set -euo pipefail
docker() { "$LAMINA" --root "$STORE" "$@"; }
other() { "$LAMINA" --root "$STORE.other" "$@"; }
export REGISTRY_AUTH_FILE="$WORK/auth.json"
docker pull -q "$UP/team/app:v1"
echo "== images"
docker images --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}'
docker tag "$UP/team/app:v1" app:local
echo "== filter"
docker images --filter reference='app*' --format '{{.Repository}}:{{.Tag}}'
test "$(docker images -q | wc -l)" = 1
echo "== create"
docker create --name web -e MODE=test --label tier=web app:local >/dev/null
docker ps -a --filter label=tier=web --format 'table {{.Names}}\t{{.State}}'
docker cp "$WORK/note.txt" web:/etc/note.txt
docker cp web:/etc/motd "$WORK/motd"
cat "$WORK/motd"
echo "== commit"
docker commit --change 'CMD ["/bin/app", "--serve"]' -c 'WORKDIR /srv' -a 'Dave' web app:v2 >/dev/null
docker inspect -f '{{json .Config.config.Cmd}} {{.Config.config.WorkingDir}} {{json .Config.config.Env}} {{.Config.author}}' app:v2
echo "== export"
docker export web | tar -tf - | sort | tr '\n' ' '; echo
echo "== save | load"
docker save app:v2 | other load
other images --format '{{.Repository}}:{{.Tag}}'
echo "== push"
docker push -q app:v2 "$UP/team/app:v2" >/dev/null
docker inspect -f '{{json .RepoDigests}}' app:v2
docker rmi app:local
docker rm web >/dev/null
docker rmi app:v2 | head -1
)SH";
    auto r = run_command({"env", "LAMINA=" + lamina_binary(), "STORE=" + (tmp / "store"),
                          "WORK=" + tmp.path(), "UP=" + up, "bash", "-c", script});
    ASSERT_EQ(r.status, 0) << r.err << "\n" << r.out;
    auto images = json::parse(
        run_command({lamina_binary(), "--root", tmp / "store", "images", "--format", "json"}).out);
    std::string pulled_digest;
    for (const auto& d : images[0]["RepoDigests"])
        if (d.get<std::string>().starts_with(up + "/team/app@"))
            pulled_digest = d.get<std::string>().substr(d.get<std::string>().find('@') + 1);
    ASSERT_FALSE(pulled_digest.empty()) << images.dump();
    EXPECT_EQ(images[0]["Id"], built.config_digest);

    std::string pushed = r.out.substr(r.out.find("== push\n") + 8);
    pushed = pushed.substr(0, pushed.find('\n'));
    auto pushed_digests = json::parse(pushed);
    ASSERT_EQ(pushed_digests.size(), 1u) << pushed;
    std::string pushed_digest = pushed_digests[0].get<std::string>();
    EXPECT_TRUE(pushed_digest.starts_with(up + "/team/app@sha256:")) << pushed_digest;

    std::string expected = up + "/team/app:v1\n" +  // pull -q
                           "== images\n" + up + "/team/app:v1 " + pulled_digest + "\n" +
                           "== filter\napp:local\n"
                           "== create\nNAMES   STATE\nweb     created\n"
                           "hello\n"
                           "== commit\n"
                           "[\"/bin/app\",\"--serve\"] /srv [\"MODE=test\"] Dave\n"
                           "== export\ndata/ data/b etc/ etc/motd etc/note.txt etc/two keep/ "
                           "keep/new \n"
                           "== save | load\nLoaded image: app:v2\napp:v2\n"
                           "== push\n" +
                           pushed + "\nUntagged: app:local\nUntagged: app:v2\n";
    EXPECT_EQ(r.out, expected) << r.err;
    // The cache served the pull: it keeps the layer it fetched from upstream.
    EXPECT_EQ(access(cache.blob_data(first_layer_digest(tmp / "demo-layout")).c_str(), F_OK), 0);
}

}  // namespace
}  // namespace lamina::test
