# A host volume read-only, a CSI volume read-write with Nomad's modes, and a scratch tmpfs.
service "store" {
  image = "registry.example/store@sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

  volume "assets" {
    type        = "host"
    source      = "shared-assets"
    destination = "/srv/assets"
    read_only   = true
  }

  volume "db" {
    type        = "csi"
    source      = "store-db"
    destination = "/var/lib/store/"
  }

  volume "tmp" {
    type        = "scratch"
    destination = "/scratch"
  }
}
