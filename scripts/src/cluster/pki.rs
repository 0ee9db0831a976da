//! The cluster's PKI: one CA, the API server's serving certificate, the
//! admin client certificate every component and test uses, and the
//! service-account signing key. Written once; an existing complete set is
//! kept, so restarts keep every issued token valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::network::HOST_IP;

pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    fn files(&self) -> [PathBuf; 8] {
        [
            self.ca_cert(),
            self.ca_key(),
            self.apiserver_cert(),
            self.apiserver_key(),
            self.admin_cert(),
            self.admin_key(),
            self.service_account_key(),
            self.service_account_pub(),
        ]
    }

    /// Write the whole set unless it is already complete.
    pub fn ensure(&self) -> anyhow::Result<()> {
        if self.files().iter().all(|f| f.exists()) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "views-gateway local cluster CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        write(&self.ca_cert(), &ca_cert.pem())?;
        write(&self.ca_key(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let mut serving = leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth)?;
        serving.subject_alt_names = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .into_iter()
        .map(|name| Ok(SanType::DnsName(name.try_into()?)))
        .chain(
            [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::V4(HOST_IP),
                super::components::SERVICE_IP_KUBERNETES,
            ]
            .map(|ip| Ok(SanType::IpAddress(ip))),
        )
        .collect::<Result<_, rcgen::Error>>()?;
        self.issue(
            &serving,
            &issuer,
            &self.apiserver_cert(),
            &self.apiserver_key(),
        )?;

        let admin = leaf(
            "kubernetes-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        self.issue(&admin, &issuer, &self.admin_cert(), &self.admin_key())?;

        let sa_key = KeyPair::generate()?;
        write(&self.service_account_key(), &sa_key.serialize_pem())?;
        write(&self.service_account_pub(), &sa_key.public_key_pem())?;
        Ok(())
    }

    fn issue(
        &self,
        params: &CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        cert_path: &Path,
        key_path: &Path,
    ) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        write(cert_path, &cert.pem())?;
        write(key_path, &key.serialize_pem())
    }
}

fn leaf(
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    Ok(())
}
