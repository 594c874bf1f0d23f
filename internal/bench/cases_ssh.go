package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync"

	"golang.org/x/crypto/ssh"
)

// The ssh case: golang.org/x/crypto/ssh channels over a plain TCP
// connection. SSH does its own encryption, so it does NOT run over TLS; it
// is pinned to aes128-gcm@openssh.com to match TLS 1.3's AES-128-GCM. The
// host key and the client's public key are ed25519. A bulk stream is a
// channel of type "bulk" whose extra data is its 4-byte id; the ping is 64
// bytes echoed on a second channel opened once.

const sshCipher = "aes128-gcm@openssh.com"

type sshKeys struct {
	host   ssh.Signer
	client ssh.Signer
}

func newSSHKeys() (*sshKeys, error) {
	_, hk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	_, ck, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	host, err := ssh.NewSignerFromKey(hk)
	if err != nil {
		return nil, err
	}
	client, err := ssh.NewSignerFromKey(ck)
	if err != nil {
		return nil, err
	}
	return &sshKeys{host: host, client: client}, nil
}

func sshCases() []benchCase {
	return []benchCase{{name: "ssh", muxed: true, connect: newSSHSession}}
}

type sshSession struct {
	cli  *ssh.Client
	srv  *ssh.ServerConn
	echo ssh.Channel
	pmu  sync.Mutex

	mu       sync.Mutex
	counters map[uint32]*counter
}

func newSSHSession(ctx context.Context, e *env) (session, error) {
	cc, sc, err := e.tcpPair(ctx)
	if err != nil {
		return nil, err
	}
	clientPub := e.ssh.client.PublicKey().Marshal()
	scfg := &ssh.ServerConfig{
		Config: ssh.Config{Ciphers: []string{sshCipher}},
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) != string(clientPub) {
				return nil, errors.New("unknown key")
			}
			return &ssh.Permissions{}, nil
		},
	}
	scfg.AddHostKey(e.ssh.host)
	ccfg := &ssh.ClientConfig{
		Config:            ssh.Config{Ciphers: []string{sshCipher}},
		User:              "bench",
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(e.ssh.client)},
		HostKeyCallback:   ssh.FixedHostKey(e.ssh.host.PublicKey()),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	}
	s := &sshSession{counters: map[uint32]*counter{}}
	type srvRes struct {
		conn  *ssh.ServerConn
		chans <-chan ssh.NewChannel
		err   error
	}
	srvCh := make(chan srvRes, 1)
	go func() {
		conn, chans, reqs, err := ssh.NewServerConn(sc, scfg)
		if err == nil {
			go ssh.DiscardRequests(reqs)
		}
		srvCh <- srvRes{conn, chans, err}
	}()
	conn, chans, reqs, err := ssh.NewClientConn(cc, cc.RemoteAddr().String(), ccfg)
	sr := <-srvCh
	if err = errors.Join(err, sr.err); err != nil {
		cc.Close()
		sc.Close()
		return nil, err
	}
	s.cli = ssh.NewClient(conn, chans, reqs)
	s.srv = sr.conn
	go s.acceptLoop(sr.chans)
	echo, ereqs, err := s.cli.OpenChannel("echo", nil)
	if err != nil {
		s.close()
		return nil, err
	}
	go ssh.DiscardRequests(ereqs)
	s.echo = echo
	return s, nil
}

func (s *sshSession) acceptLoop(chans <-chan ssh.NewChannel) {
	for nc := range chans {
		switch nc.ChannelType() {
		case "echo":
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(reqs)
			go func() {
				_, _ = io.Copy(ch, ch)
				ch.Close()
			}()
		case "bulk":
			extra := nc.ExtraData()
			if len(extra) != 4 {
				_ = nc.Reject(ssh.ConnectionFailed, "bad id")
				continue
			}
			s.mu.Lock()
			rc := s.counters[binary.BigEndian.Uint32(extra)]
			s.mu.Unlock()
			if rc == nil {
				_ = nc.Reject(ssh.ConnectionFailed, "unknown id")
				continue
			}
			ch, reqs, err := nc.Accept()
			if err != nil {
				rc.finish(err)
				continue
			}
			go ssh.DiscardRequests(reqs)
			go func() {
				rc.finish(drain(ch, rc))
				ch.Close()
			}()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type")
		}
	}
}

func (s *sshSession) open(id int, rc *counter) (sender, error) {
	s.mu.Lock()
	s.counters[uint32(id)] = rc
	s.mu.Unlock()
	ch, reqs, err := s.cli.OpenChannel("bulk", binary.BigEndian.AppendUint32(nil, uint32(id)))
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return &sshSender{ch: ch}, nil
}

func (s *sshSession) ping(ctx context.Context) error {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	var b [64]byte
	if _, err := s.echo.Write(b[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(s.echo, b[:])
	return err
}

func (s *sshSession) close() {
	s.cli.Close()
	s.srv.Close()
}

type sshSender struct{ ch ssh.Channel }

func (w *sshSender) send(c chunk) error {
	_, err := w.ch.Write(c.payload())
	return err
}

func (w *sshSender) close() error { return w.ch.CloseWrite() }
