# Secrets and config from Nomad Variables at nomad/jobs/<service>: a file, env, and a
# file whose change is signalled.
service "shop" {
  command = "/usr/local/bin/shop"

  template {
    destination = "secrets/db.env"
    env         = true
    data        = <<-EOT
      {{ with nomadVar "nomad/jobs/shop/db" }}
      DB_USER={{ .user }}
      DB_PASSWORD={{ .password }}
      {{ end }}
    EOT
  }

  template {
    destination   = "local/config.yaml"
    change_mode   = "signal"
    change_signal = "SIGHUP"
    data          = <<-EOT
      {{ range nomadVarList "nomad/jobs/shop/flags" }}{{ .Path }}
      {{ end }}
      alloc: ${NOMAD_ALLOC_ID}
    EOT
  }

  template {
    destination = "./local/../local/static.txt"
    change_mode = "noop"
    data        = "no variables here"
  }
}
